// The corpus: tests/unit/data/config/bad/*.yaml each hold one mistake and, on their first
// two lines, the exact error the loader must give and the kind of mistake:
//   # expect: name.yaml:4:5: profiles.corp.subnet: unknown key 'subnet' (did you mean ...)
//   # kind: shape | semantic | syntax | include
// shape: the schema alone rejects the file with that same message (loader and schema agree);
// semantic: the schema accepts the file, the checks it cannot express reject it;
// syntax: the file does not even parse (YAML, duplicate keys, ${VAR});
// include: the mistake shows only once includes are followed.
// Bad files are loaded in a child process with a time and memory bound (config_bounded.hpp),
// so a file that crashes or hangs the loader fails its own test only.
// good/*.yaml must load and pass the schema. Files are loaded by bare name from their
// directory, so messages are stable wherever the tree is checked out.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "config/config.hpp"
#include "config/schema.hpp"
#include "config/tree.hpp"
#include "config_bounded.hpp"

namespace {

namespace fs = std::filesystem;
using namespace tprosshy::config;

const fs::path data_dir = fs::path(TPROSSHY_SOURCE_DIR) / "tests/unit/data/config";

struct sample {
  std::string name;
  std::string expect;
  std::string kind;
};

void PrintTo(const sample& s, std::ostream* os) { *os << s.name; }

std::vector<sample> samples(const std::string& dir) {
  std::vector<sample> out;
  for (auto& f : fs::directory_iterator(data_dir / dir)) {
    if (f.path().extension() != ".yaml") continue;
    sample s{f.path().filename().string(), "", ""};
    std::ifstream in(f.path());
    std::string line;
    while (std::getline(in, line) && line.starts_with("#")) {
      if (line.starts_with("# expect: ")) s.expect = line.substr(10);
      if (line.starts_with("# kind: ")) s.kind = line.substr(8);
    }
    out.push_back(s);
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs in the sample's directory with a known environment.
class in_dir {
 public:
  explicit in_dir(const fs::path& dir) : old_(fs::current_path()) {
    fs::current_path(dir);
    setenv("HOME", "/home/tester", 1);
    setenv("TPROSSHY_TEST_HOST", "bastion.example.com", 1);
    setenv("TPROSSHY_TEST_PORT", "2222", 1);
    setenv("TPROSSHY_TEST_DIR", "inc", 1);
    unsetenv("TPROSSHY_TEST_UNSET");
  }
  ~in_dir() { fs::current_path(old_); }

 private:
  fs::path old_;
};

// The message of the config::error `f` throws, or "" if it does not throw.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

std::string test_name(const testing::TestParamInfo<sample>& info) {
  return fs::path(info.param.name).stem().string();
}

class bad : public testing::TestWithParam<sample> {};
class good : public testing::TestWithParam<sample> {};

TEST_P(bad, load_gives_the_expected_error) {
  auto& s = GetParam();
  ASSERT_FALSE(s.expect.empty()) << s.name << " has no '# expect: ' line";
  in_dir here(data_dir / "bad");
  auto got = tprosshy::test::bounded([&] { load(s.name); });
  EXPECT_EQ(got.other, "");
  EXPECT_EQ(got.error, s.expect);
}

TEST_P(bad, schema_agrees_on_the_kind_of_mistake) {
  auto& s = GetParam();
  in_dir here(data_dir / "bad");
  auto validate = [&] { detail::schema::builtin().validate(detail::parse(read(s.name), s.name)); };
  auto parse = [&] { detail::parse(read(s.name), s.name); };
  using tprosshy::test::bounded;
  if (s.kind == "shape") {
    EXPECT_EQ(bounded(validate).error, s.expect) << "the schema alone must reject a shape error";
  } else if (s.kind == "semantic" || s.kind == "include") {
    auto got = bounded(validate);
    EXPECT_TRUE(got.ok()) << got << ": the schema must accept the file itself";
  } else if (s.kind == "syntax") {
    auto got = bounded(parse);
    EXPECT_EQ(got.other, "");
    EXPECT_EQ(got.error, s.expect);
  } else {
    ADD_FAILURE() << s.name << ": unknown kind '" << s.kind << "'";
  }
}

TEST_P(good, loads_and_passes_the_schema) {
  auto& s = GetParam();
  in_dir here(data_dir / "good");
  EXPECT_EQ(error_of([&] { load(s.name); }), "");
  // A file with includes may be partial on its own; `required` then waits for the merge.
  auto doc = detail::parse(read(s.name), s.name);
  detail::schema::options opts{.check_required = !doc.find("include")};
  EXPECT_EQ(error_of([&] { detail::schema::builtin().validate(doc, opts); }), "");
}

INSTANTIATE_TEST_SUITE_P(corpus, bad, testing::ValuesIn(samples("bad")), test_name);
INSTANTIATE_TEST_SUITE_P(corpus, good, testing::ValuesIn(samples("good")), test_name);

TEST(corpus, is_large_and_each_mistake_is_different) {
  auto all = samples("bad");
  EXPECT_GE(all.size(), 25u);
  std::set<std::string> messages;
  std::set<std::string> kinds;
  for (auto& s : all) {
    // Strip "file:line:col: " so the same mistake in two files counts once.
    auto colon = s.expect.find(": ");
    EXPECT_TRUE(messages.insert(s.expect.substr(colon + 2)).second) << s.name << " repeats a case";
    kinds.insert(s.kind);
  }
  EXPECT_EQ(kinds, (std::set<std::string>{"include", "semantic", "shape", "syntax"}));
  EXPECT_GE(samples("good").size(), 5u);
}

}  // namespace
