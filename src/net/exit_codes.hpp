#pragma once
// The statuses of sysexits.h, by name, for every layer: a process's exit, the answer to a
// reload or a control request, the helper's own exit. (net is the library every other
// links, so this is its one home.)
namespace tprosshy::exit_code {

inline constexpr int ok = 0;
inline constexpr int usage = 64;        // EX_USAGE: a bad argument or request
inline constexpr int noinput = 66;      // EX_NOINPUT: the config file cannot be read
inline constexpr int unavailable = 69;  // EX_UNAVAILABLE: no tunnel, no tprosshy to ask
inline constexpr int software = 70;     // EX_SOFTWARE: a bug
inline constexpr int oserr = 71;        // EX_OSERR: a port, a socket, the kernel refused
inline constexpr int tempfail = 75;     // EX_TEMPFAIL: busy or stopping; try again
inline constexpr int noperm = 77;       // EX_NOPERM: not permitted
inline constexpr int config = 78;       // EX_CONFIG: a bad configuration

}  // namespace tprosshy::exit_code
