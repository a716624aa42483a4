# Makes the packaged /etc/parry/agent.toml from config/agent.toml (cmake -P, run by
# packaging/cpack.cmake):
#
#   cmake -DIN=<config/agent.toml> -DOUT=<file> -P agent-config.cmake
#
# The example file sets example values that must not become a packaged default: a
# server at 10.0.0.5 and file roots that grant the file actions /home, /tmp and /srv.
# Those stay in the file as comments; the packaged values are the agent's defaults
# (the server on this host, no file roots). state_dir is the package's
# /var/lib/parry-agent, already the agent's default. A line that is no longer found
# in config/agent.toml fails the build, so the two files cannot drift apart unseen.

file(READ "${IN}" text)

function(swap old new)
  string(FIND "${text}" "${old}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "agent-config: ${IN} no longer has the line\n  ${old}\n"
      "adapt packaging/agent-config.cmake")
  endif()
  string(REPLACE "${old}" "${new}" text "${text}")
  set(text "${text}" PARENT_SCOPE)
endfunction()

swap("# parry-agent --real: configuration of the real Linux agent (docs/agent-real.md).\n"
"# parry-agent --real: configuration of the real Linux agent
# (/usr/share/doc/parry-agent/agent-real.md). The package's unit parry-agent.service
# runs `parry-agent --real --config /etc/parry/agent.toml` as root with the
# capabilities listed in the unit; it is not enabled at installation. Set `server`
# and `enroll_server` below, enroll once by hand (the first start below; stop it
# with Ctrl-C once it is connected), then `systemctl enable --now parry-agent`.
")
swap("server = \"tcp://10.0.0.5:7400\"\nenroll_server = \"tcp://10.0.0.5:7401\"\n"
"#server = \"tcp://10.0.0.5:7400\"\n#enroll_server = \"tcp://10.0.0.5:7401\"\n")
swap("state_dir = \"/var/lib/parry-agent\"\n"
"state_dir = \"/var/lib/parry-agent\"\n")
swap("# Example.\nfile_roots = [\"/home\", \"/tmp\", \"/srv\"]\n"
"# Example: file_roots = [\"/home\", \"/tmp\", \"/srv\"]\nfile_roots = []\n")

file(WRITE "${OUT}" "${text}")
