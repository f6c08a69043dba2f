# The Debian package: `cpack -G DEB` in the build directory (README, "Debian package")
# writes tprosshy_VERSION_ARCH.deb from the install rules of CMakeLists.txt.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tprosshy)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "tprosshy developers <dev@tprosshy.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "routes chosen TCP and DNS through OpenSSH ControlMaster tunnels")
set(CPACK_PACKAGE_DESCRIPTION
  "tprosshy sends chosen TCP traffic, and DNS names under chosen domains, through SSH
servers that have nothing installed on them. It runs one OpenSSH ControlMaster per
profile and installs one nftables table that redirects the routed flows to itself;
each flow's socket is handed to the ssh of the profile whose subnets match best.
It routes this machine's own traffic, or a LAN's as a gateway.")
# Installed with DESTDIR under the prefix /usr, so that files outside it (/etc) and files
# that name installed paths (the systemd unit's ExecStart) come out right.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Runtime libraries from dpkg-shlibdeps; ssh is run, not linked.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "openssh-client")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "keepalived")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${CMAKE_SOURCE_DIR}/packaging/debian/conffiles
  ${CMAKE_SOURCE_DIR}/packaging/debian/postinst
  ${CMAKE_SOURCE_DIR}/packaging/debian/prerm
  ${CMAKE_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
