#pragma once
// The status as people and programs read it: a block per profile (`tprosshy status`), JSON
// (`status json`) and the Prometheus text format 0.0.4 (/metrics). Pure functions.
#include <cstdint>
#include <string>

#include "control/status.hpp"

namespace tprosshy::control {

// For people. `now` (Unix seconds) gives the ages; times are in the local time zone.
// Control characters and invalid UTF-8 in strings are shown escaped (\n, \x1b).
std::string render_text(const status& s, std::int64_t now);

// One object whose keys are the field names of `status` and `profile_status`; integers
// exact, absent times null, counts by rcode as objects; invalid UTF-8 becomes U+FFFD.
std::string render_json(const status& s);

// Prometheus text format 0.0.4, `tprosshy_` names in base units, labels per profile only.
// DNS queries for names no profile takes are counted under profile="" (no profile can
// have an empty name). Profile names must be unique in s.profiles.
std::string render_prometheus(const status& s);

// 1572864 → "1.5 MiB"; below 1024, "512 B".
std::string human_bytes(std::uint64_t n);
// 3725 → "1h 2m"; the two largest units, down to seconds.
std::string human_age(std::int64_t seconds);

}  // namespace tprosshy::control
