#include "client/ktlsctl/args.h"

#include "base/options.h"

namespace ktlsctl {

ParsedArgs Parse(int argc, char** argv, const std::set<std::string>& boolean_flags,
                 const std::set<std::string>& value_flags) {
  ParsedArgs out;
  // The usage text (main.cc) documents the commands with their flags; this parser only needs
  // the names.
  ktls::base::OptionParser parser("ktlsctl", "");
  parser.AllowPositional();
  for (const std::string& name : boolean_flags) {
    if (name != "help") parser.AddSwitch(name, "");
  }
  for (const std::string& name : value_flags) {
    parser.AddCustom(name, "VALUE", "", "", [&out, name](absl::string_view v) {
      out.flags[name] = std::string(v);
      return absl::OkStatus();
    });
  }
  parser.AddShortAlias('o', "output");
  parser.AddShortAlias('s', "socket");
  if (absl::Status s = parser.Parse(argc, argv); !s.ok()) {
    out.error = std::string(s.message());
    return out;
  }
  out.positional = parser.positional();
  for (const std::string& name : boolean_flags) {
    if (parser.WasGiven(name)) out.switches.insert(name);
  }
  if (parser.help_requested()) out.switches.insert("help");
  return out;
}

}  // namespace ktlsctl
