// Command-line parsing for ktlsctl, kubectl style: `ktlsctl [global flags] GROUP VERB [ARGS]
// [--flag=value | --flag value | -o json]`, flags anywhere after the program name. Parsed by the
// shared option parser (base/options.h); each command then checks that it takes the flags given
// (main.cc). An unknown flag or a missing argument is a usage error (exit 2).
#ifndef KTLS_CLIENT_KTLSCTL_ARGS_H_
#define KTLS_CLIENT_KTLSCTL_ARGS_H_

#include <map>
#include <set>
#include <string>
#include <vector>

namespace ktlsctl {

struct ParsedArgs {
  std::vector<std::string> positional;       // command words and arguments, in order
  std::map<std::string, std::string> flags;  // "--name=value" / "--name value"; "-o" -> "output"
  std::set<std::string> switches;            // flags without a value ("--force")
  std::string error;                         // non-empty: usage error

  bool Has(const std::string& name) const { return flags.count(name) || switches.count(name); }
  std::string Get(const std::string& name, const std::string& fallback = "") const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  }
};

// `boolean_flags` never take a value (so "--force NAME" keeps NAME positional); `value_flags`
// always do. Names are spelled with '-' ("expected-generation"); "--expected_generation" is the
// same flag. -o, -s and -h are --output, --socket and --help.
ParsedArgs Parse(int argc, char** argv, const std::set<std::string>& boolean_flags,
                 const std::set<std::string>& value_flags);

}  // namespace ktlsctl

#endif  // KTLS_CLIENT_KTLSCTL_ARGS_H_
