#include "app/app.hpp"

int main(int argc, char** argv) { return tprosshy::app::main(argc, argv); }
