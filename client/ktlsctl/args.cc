#include "client/ktlsctl/args.h"

namespace ktlsctl {

ParsedArgs Parse(int argc, char** argv, const std::set<std::string>& boolean_flags) {
  ParsedArgs out;
  bool only_positional = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (only_positional || a.empty() || a[0] != '-' || a == "-") {
      out.positional.push_back(a);
      continue;
    }
    if (a == "--") {
      only_positional = true;
      continue;
    }
    std::string name;
    std::string value;
    bool has_value = false;
    if (a.rfind("--", 0) == 0) {
      name = a.substr(2);
    } else if (a == "-o") {
      name = "output";
    } else if (a.rfind("-o", 0) == 0) {  // -ojson
      name = "output";
      value = a.substr(2);
      has_value = true;
    } else if (a == "-h") {
      name = "help";
    } else if (a == "-s") {
      name = "socket";
    } else {
      out.error = "unknown flag " + a;
      return out;
    }
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    // Both spellings: --expected-generation and --expected_generation.
    for (char& c : name) {
      if (c == '_') c = '-';
    }
    if (boolean_flags.count(name) != 0) {
      if (has_value && value != "true" && value != "false") {
        out.error = "--" + name + " takes no value";
        return out;
      }
      if (!has_value || value == "true") out.switches.insert(name);
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        out.error = "--" + name + " needs a value";
        return out;
      }
      value = argv[++i];
    }
    out.flags[name] = value;
  }
  return out;
}

}  // namespace ktlsctl
