# Run by `cmake --install`: writes tprosshy.service and tprosshy-helper.service naming the
# binary under this install's prefix (which `--prefix` may change after configuring), and
# tprosshy-helper.socket, into the unit directory.
# Set by CMakeLists.txt before this runs: TPROSSHY_UNIT_SRC, TPROSSHY_UNIT_DIR, TPROSSHY_BINDIR.
if(IS_ABSOLUTE "${TPROSSHY_UNIT_DIR}")
  set(dir "${TPROSSHY_UNIT_DIR}")
else()
  set(dir "${CMAKE_INSTALL_PREFIX}/${TPROSSHY_UNIT_DIR}")
endif()
set(TPROSSHY_BIN "${CMAKE_INSTALL_PREFIX}/${TPROSSHY_BINDIR}/tprosshy")
foreach(name tprosshy.service tprosshy-helper.service tprosshy-helper.socket)
  set(unit "$ENV{DESTDIR}${dir}/${name}")
  message(STATUS "Installing: ${unit}")
  if(EXISTS "${TPROSSHY_UNIT_SRC}/${name}.in")
    configure_file("${TPROSSHY_UNIT_SRC}/${name}.in" "${unit}" @ONLY)
  else()
    configure_file("${TPROSSHY_UNIT_SRC}/${name}" "${unit}" COPYONLY)
  endif()
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${unit}")
endforeach()
