#pragma once

namespace tprosshy::app {

// argv → exit code (sysexits.h).
int main(int argc, char** argv);

}  // namespace tprosshy::app
