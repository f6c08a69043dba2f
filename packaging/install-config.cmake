# Run by `cmake --install` (and so by cpack): the example configuration.
#  - prefix /usr (the Debian package; the service reads /etc/tprosshy/config.yaml):
#    /etc/tprosshy/config.yaml and example-team.yaml beside it (config.yaml includes it),
#    in a directory only root can open (mode 0700, as README's service section has it).
#    A file that is already there is kept: `cmake --install --prefix /usr` never
#    overwrites a configuration (dpkg handles the package's conffiles itself).
#  - any other prefix: PREFIX/share/tprosshy/examples/, for reading; nothing in an etc/
#    that no tprosshy reads.
# Their yaml-language-server line points at the installed schema.
# Set by CMakeLists.txt before this runs: TPROSSHY_CONFIG_DIR_IN (the source's config/),
# TPROSSHY_SCHEMA_REL (the schema's path under the prefix).
set(schema "${CMAKE_INSTALL_PREFIX}/${TPROSSHY_SCHEMA_REL}")
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(dir "/etc/tprosshy")
  set(files "example.yaml=config.yaml" "example-team.yaml=example-team.yaml")
  set(keep TRUE)
else()
  set(dir "${CMAKE_INSTALL_PREFIX}/share/tprosshy/examples")
  set(files "example.yaml=example.yaml" "example-team.yaml=example-team.yaml")
  set(keep FALSE)
endif()
if(NOT EXISTS "$ENV{DESTDIR}${dir}")
  file(MAKE_DIRECTORY "$ENV{DESTDIR}${dir}")
  if(keep)
    file(CHMOD "$ENV{DESTDIR}${dir}" DIRECTORY_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
  endif()
endif()
foreach(pair ${files})
  string(REPLACE "=" ";" pair "${pair}")
  list(GET pair 0 from)
  list(GET pair 1 to)
  set(dest "$ENV{DESTDIR}${dir}/${to}")
  if(keep AND EXISTS "${dest}")
    message(STATUS "Kept (exists): ${dest}")
  else()
    message(STATUS "Installing: ${dest}")
    file(READ "${TPROSSHY_CONFIG_DIR_IN}/${from}" text)
    string(REPLACE "$schema=../schemas/tprosshy.schema.json" "$schema=${schema}" text "${text}")
    file(WRITE "${dest}" "${text}")
  endif()
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${dest}")
endforeach()
