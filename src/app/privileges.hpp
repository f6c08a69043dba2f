#pragma once
// Who the daemon runs as. Only the helper process is ever root for a user: under
// `sudo tprosshy -c FILE` with FILE the invoking user's, the root half spawns the helper and
// the rest becomes that user before it reads any file (docs/ARCHITECTURE.md, "The trust
// boundary").
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "helper/client.hpp"
#include "tunnel/account.hpp"

namespace tprosshy::app {

using tunnel::account;

// The user sudo ran us for (SUDO_UID, not root) when we are root; nullopt otherwise.
std::optional<account> sudo_user();

// Whether `file` belongs to `a` (then a run under sudo becomes `a`); a missing file counts
// as `a`'s so that the error about it comes from `a`'s own read.
bool owned_by(const std::filesystem::path& file, const account& a);

// The helper for a run that becomes `a`: root, but serving `a` as it would serve `a`'s own
// tprosshy (confined to `a`'s sockets), since it names its caller by the credentials of
// whoever made their socket pair, and a child that already is `a` makes it.
helper::client helper_for(const account& a);

// `sudo tprosshy helper --stdio`, which asks the sudo password on the terminal.
helper::client sudo_helper();

// The sudoers line that allows exactly that for this user.
std::string sudoers_line();

// Becomes `a` for good: supplementary groups, gid, uid (real, effective and saved), and
// HOME, USER, LOGNAME and SHELL from the password database. Throws std::system_error.
void become(const account& a);

}  // namespace tprosshy::app
