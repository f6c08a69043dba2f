#pragma once
// Which ssh_args tprosshy refuses: those that take the ssh process or its forwarding out of
// tprosshy's hands. tprosshy runs each tunnel as
//   ssh -N -o ControlMaster=yes -o ControlPath=DIR/NAME -o BatchMode=yes ... [ssh_args] host
// and hands every flow to that master over its control socket, so it must own the master's
// life (no fork to the background, no ControlPersist), its control socket, and its
// forwardings; ssh must never wait for a password nobody can type; and it must always
// check the server's host key.
#include <cstddef>
#include <string>
#include <vector>

namespace tprosshy::config {

struct ssh_arg_refusal {
  std::size_t index;    // the list entry that names the refused option or setting
  std::string message;  // "'-fN' holds -f, which makes ssh fork ...; remove it"
};

// Reads `args` the way OpenSSH 9.2's getopt reads its command line ("1246ab:c:e:fgi:kl:m:
// no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:PQ:R:S:TVw:W:XYy", no reordering): short flags bundle
// (-4fN), an option that takes a value takes the rest of its bundle or else the next entry
// (so in ["-i", "-f"] the "-f" is a file name), and -o settings are read as ssh_config(5)
// reads them (Key=value, Key value, keys in any case). Entries that are not options are
// skipped, as ssh reads options again after the destination. Refused:
//   -f -M -s -G -V, -D -L -R -W -w -S -O -Q;
//   -o ControlMaster, ControlPath, ControlPersist, LocalForward, RemoteForward,
//      DynamicForward (any value); ForkAfterAuthentication and Tunnel unless no;
//      SessionType unless none; BatchMode=no; StrictHostKeyChecking no, off or false
//      (host keys are always checked: pinned in host_keys or in known_hosts);
//   an option that needs a value as the last entry (ssh would take the destination).
// Everything else passes, -N, -n, -J, -F, -E, StdinNull and ExitOnForwardFailure included.
// Returns every refusal, in list order; none means the list is fine.
std::vector<ssh_arg_refusal> refused_ssh_args(const std::vector<std::string>& args);

}  // namespace tprosshy::config
