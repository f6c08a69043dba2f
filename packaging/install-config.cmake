# Run by `cmake --install` (and so by cpack): installs the example configuration as
# SYSCONFDIR/tprosshy/config.yaml, with example-team.yaml beside it (config.yaml includes
# it), their yaml-language-server line pointing at the installed schema.
# SYSCONFDIR is /etc for the prefix /usr (the Debian package), else PREFIX/etc.
# A file that is already there is kept: `sudo cmake --install` never overwrites a
# configuration (the package's dpkg handles its conffiles itself).
# Set by CMakeLists.txt before this runs: TPROSSHY_CONFIG_DIR_IN (the source's config/),
# TPROSSHY_SCHEMA_REL (the schema's path under the prefix).
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(confdir "/etc/tprosshy")
else()
  set(confdir "${CMAKE_INSTALL_PREFIX}/etc/tprosshy")
endif()
set(schema "${CMAKE_INSTALL_PREFIX}/${TPROSSHY_SCHEMA_REL}")
file(MAKE_DIRECTORY "$ENV{DESTDIR}${confdir}")
foreach(pair "example.yaml=config.yaml" "example-team.yaml=example-team.yaml")
  string(REPLACE "=" ";" pair "${pair}")
  list(GET pair 0 from)
  list(GET pair 1 to)
  set(dest "$ENV{DESTDIR}${confdir}/${to}")
  if(EXISTS "${dest}")
    message(STATUS "Kept (exists): ${dest}")
  else()
    message(STATUS "Installing: ${dest}")
    file(READ "${TPROSSHY_CONFIG_DIR_IN}/${from}" text)
    string(REPLACE "$schema=../schemas/tprosshy.schema.json" "$schema=${schema}" text "${text}")
    file(WRITE "${dest}" "${text}")
  endif()
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${dest}")
endforeach()
