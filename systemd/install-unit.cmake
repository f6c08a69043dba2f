# Run by `cmake --install`: writes tprosshy.service naming the binary under this install's
# prefix (which `--prefix` may change after configuring) into the unit directory.
# Set by CMakeLists.txt before this runs: TPROSSHY_UNIT_IN, TPROSSHY_UNIT_DIR, TPROSSHY_BINDIR.
if(IS_ABSOLUTE "${TPROSSHY_UNIT_DIR}")
  set(dir "${TPROSSHY_UNIT_DIR}")
else()
  set(dir "${CMAKE_INSTALL_PREFIX}/${TPROSSHY_UNIT_DIR}")
endif()
set(TPROSSHY_BIN "${CMAKE_INSTALL_PREFIX}/${TPROSSHY_BINDIR}/tprosshy")
set(unit "$ENV{DESTDIR}${dir}/tprosshy.service")
message(STATUS "Installing: ${unit}")
configure_file("${TPROSSHY_UNIT_IN}" "${unit}" @ONLY)
list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${unit}")
