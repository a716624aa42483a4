# Debian packages (CPack DEB, one package per component):
#
#   parry-server  /usr/sbin/parryd, /usr/bin/parryctl, the console in
#                 /usr/share/parry/web, /etc/parry/parryd.toml (conffile), the unit
#                 parryd.service; the `parry` system user and /var/lib/parry are
#                 made by its postinst
#   parry-agent   /usr/sbin/parry-agent, /etc/parry/agent.toml (conffile), the unit
#                 parry-agent.service; state in /var/lib/parry-agent
#
#   cmake --build build --target package    # build/parry-{server,agent}_<ver>_amd64.deb
#
# Included at the end of the root CMakeLists.txt. Maintainer scripts, units and
# lintian overrides are in packaging/; tests/package/ installs the packages into a
# throwaway root and starts parryd from it.

# Debian's layout: programs below /usr, configuration in /etc, units in /lib.
# Relative destinations are below CPACK_PACKAGING_INSTALL_PREFIX (/usr).
set(CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE
  GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
set(parry_pkg_dir ${CMAKE_BINARY_DIR}/packaging)
set(parry_pkg_src ${CMAKE_SOURCE_DIR}/packaging)
set(PARRY_PACKAGE_CONTACT
  "Parry maintainers <maintainers@users.noreply.r-seed-a9070cae.example>"
  CACHE STRING "Maintainer field of the Debian packages")

# -- files made at build time ---------------------------------------------------

# /etc/parry/parryd.toml: the template parryd prints, with the packaged data_dir and
# web_dir set (see gen-parryd-toml.cmake).
add_custom_command(
  OUTPUT ${parry_pkg_dir}/parryd.toml
  COMMAND ${CMAKE_COMMAND} -DPARRYD=$<TARGET_FILE:parryd>
          -DOUT=${parry_pkg_dir}/parryd.toml -P ${parry_pkg_src}/gen-parryd-toml.cmake
  DEPENDS parryd ${parry_pkg_src}/gen-parryd-toml.cmake
  COMMENT "Generating the packaged parryd.toml"
  VERBATIM)

# /etc/parry/agent.toml: config/agent.toml without its example server and file roots.
add_custom_command(
  OUTPUT ${parry_pkg_dir}/agent.toml
  COMMAND ${CMAKE_COMMAND} -DIN=${CMAKE_SOURCE_DIR}/config/agent.toml
          -DOUT=${parry_pkg_dir}/agent.toml -P ${parry_pkg_src}/agent-config.cmake
  DEPENDS ${CMAKE_SOURCE_DIR}/config/agent.toml ${parry_pkg_src}/agent-config.cmake
  COMMENT "Generating the packaged agent.toml"
  VERBATIM)

# The changelog (Debian policy 12.7). The version has no Debian revision, so these
# are native packages and it is changelog.gz; gzip -n leaves no timestamp in it.
configure_file(${parry_pkg_src}/debian/changelog.in ${parry_pkg_dir}/changelog @ONLY)
add_custom_command(
  OUTPUT ${parry_pkg_dir}/changelog.gz
  COMMAND sh -c "gzip -9nc changelog > changelog.gz"
  DEPENDS ${parry_pkg_dir}/changelog
  WORKING_DIRECTORY ${parry_pkg_dir}
  VERBATIM)

add_custom_target(parry_package_files ALL
  DEPENDS ${parry_pkg_dir}/parryd.toml ${parry_pkg_dir}/agent.toml
          ${parry_pkg_dir}/changelog.gz)

# The control files that dpkg keeps: conffiles and maintainer scripts.
file(WRITE ${parry_pkg_dir}/server/conffiles "/etc/parry/parryd.toml\n")
file(WRITE ${parry_pkg_dir}/agent/conffiles "/etc/parry/agent.toml\n")
foreach(pkg server agent)
  foreach(script postinst prerm postrm)
    configure_file(${parry_pkg_src}/debian/parry-${pkg}.${script}
      ${parry_pkg_dir}/${pkg}/${script} COPYONLY)
  endforeach()
endforeach()

# -- install rules ----------------------------------------------------------------

# parry-server
install(TARGETS parryd RUNTIME DESTINATION sbin COMPONENT server)
# parryd starts its gateway processes (bus_gateways > 0) from its own directory.
install(TARGETS parry-gateway RUNTIME DESTINATION sbin COMPONENT server)
install(TARGETS parryctl RUNTIME DESTINATION bin COMPONENT server)
# The console: only what parryd serves (web_assets.cpp: a flat directory of these
# types); web/README.md is the developers' file map.
install(DIRECTORY ${CMAKE_SOURCE_DIR}/web/ DESTINATION share/parry/web
  COMPONENT server
  FILES_MATCHING PATTERN "*.html" PATTERN "*.css" PATTERN "*.js" PATTERN "*.svg"
  PATTERN "*.png" PATTERN "*.ico")
install(FILES ${parry_pkg_dir}/parryd.toml DESTINATION /etc/parry COMPONENT server)
install(FILES ${parry_pkg_src}/parryd.service DESTINATION /lib/systemd/system
  COMPONENT server)
install(FILES
  ${CMAKE_SOURCE_DIR}/README.md
  ${CMAKE_SOURCE_DIR}/docs/operations.md
  ${CMAKE_SOURCE_DIR}/docs/console.md
  ${CMAKE_SOURCE_DIR}/docs/actions.md
  ${CMAKE_SOURCE_DIR}/docs/architecture.md
  ${CMAKE_SOURCE_DIR}/docs/rest-api.md
  ${CMAKE_SOURCE_DIR}/docs/bus-protocol.md
  ${CMAKE_SOURCE_DIR}/docs/parryctl.md
  ${parry_pkg_src}/copyright
  ${parry_pkg_dir}/changelog.gz
  DESTINATION share/doc/parry-server COMPONENT server)
# console.md shows these.
install(DIRECTORY ${CMAKE_SOURCE_DIR}/docs/ DESTINATION share/doc/parry-server
  COMPONENT server FILES_MATCHING PATTERN "console-*.png")
install(FILES ${parry_pkg_src}/lintian-overrides/parry-server
  DESTINATION share/lintian/overrides COMPONENT server)

# parry-agent
install(TARGETS parry-agent RUNTIME DESTINATION sbin COMPONENT agent)
install(FILES ${parry_pkg_dir}/agent.toml DESTINATION /etc/parry COMPONENT agent)
install(FILES ${parry_pkg_src}/parry-agent.service DESTINATION /lib/systemd/system
  COMPONENT agent)
install(FILES
  ${CMAKE_SOURCE_DIR}/docs/agent-real.md
  ${parry_pkg_src}/copyright
  ${parry_pkg_dir}/changelog.gz
  DESTINATION share/doc/parry-agent COMPONENT agent)
install(FILES ${parry_pkg_src}/lintian-overrides/parry-agent
  DESTINATION share/lintian/overrides COMPONENT agent)

# -- CPack --------------------------------------------------------------------------

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME parry)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${PARRY_PACKAGE_CONTACT}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL server agent)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SOURCE parry)
# Library dependencies from the binaries (dpkg-shlibdeps); the rest by hand.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Scripts 0755, conffiles 0644, whatever the builder's umask.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME parry-server)
# adduser: the postinst makes the parry user with it.
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS adduser)
set(CPACK_DEBIAN_SERVER_DESCRIPTION
  "EDR response-action server\n\
Parry delivers response actions (isolate a device, prevent run, quarantine,\n\
delete a file, terminate or start a process, and their reverse) to endpoint\n\
agents over a CURVE-encrypted ZeroMQ bus, follows each to its end and keeps a\n\
hash-chained audit trail.\n\
.\n\
This package holds the server parryd with its web console, the command-line\n\
client parryctl and the systemd unit parryd.service.")
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
  ${parry_pkg_dir}/server/conffiles ${parry_pkg_dir}/server/postinst
  ${parry_pkg_dir}/server/prerm ${parry_pkg_dir}/server/postrm)

set(CPACK_DEBIAN_AGENT_PACKAGE_NAME parry-agent)
set(CPACK_DEBIAN_AGENT_DESCRIPTION
  "EDR response-action agent for Linux endpoints\n\
The Parry agent connects to a Parry server and carries out its response\n\
actions on this machine: nftables isolation, fanotify prevent run and IOC\n\
detection, encrypted quarantine, file deletion, process termination and\n\
start.\n\
.\n\
This package holds parry-agent and the systemd unit parry-agent.service, which\n\
is not enabled at installation: the agent must be configured and enrolled\n\
first.")
set(CPACK_DEBIAN_AGENT_PACKAGE_CONTROL_EXTRA
  ${parry_pkg_dir}/agent/conffiles ${parry_pkg_dir}/agent/postinst
  ${parry_pkg_dir}/agent/prerm ${parry_pkg_dir}/agent/postrm)

include(CPack)
