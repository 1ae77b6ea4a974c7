#include "client/loadgen/proc_stats.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>

#include "absl/strings/numbers.h"

namespace ktls::loadgen {

double ProcessTreeCpuSeconds(const std::vector<int>& roots) {
  if (roots.empty()) return 0;
  std::unordered_map<int, int> parent;
  std::unordered_map<int, uint64_t> ticks;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    std::ifstream f(path);
    std::string line;
    if (!std::getline(f, line)) continue;  // gone meanwhile
    // "pid (comm) state ppid ... utime stime": comm may hold spaces and parentheses.
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    std::vector<std::string> f2;
    while (rest >> field && f2.size() < 13) f2.push_back(field);
    if (f2.size() < 13) continue;
    int ppid = 0;
    if (!absl::SimpleAtoi(f2[1], &ppid)) continue;
    parent[static_cast<int>(pid)] = ppid;
    ticks[static_cast<int>(pid)] =
        std::strtoull(f2[11].c_str(), nullptr, 10) + std::strtoull(f2[12].c_str(), nullptr, 10);
  }
  ::closedir(d);
  std::set<int> tree(roots.begin(), roots.end());
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [pid, ppid] : parent) {
      if (!tree.count(pid) && tree.count(ppid)) {
        tree.insert(pid);
        grew = true;
      }
    }
  }
  uint64_t sum = 0;
  for (int pid : tree) {
    auto it = ticks.find(pid);
    if (it != ticks.end()) sum += it->second;
  }
  static const long hz = ::sysconf(_SC_CLK_TCK);
  return static_cast<double>(sum) / (hz > 0 ? hz : 100);
}

std::map<std::string, int64_t> ReadTlsStat() {
  std::map<std::string, int64_t> out;
  std::ifstream f("/proc/net/tls_stat");
  std::string name;
  int64_t value;
  while (f >> name >> value) out[name] = value;
  return out;
}

}  // namespace ktls::loadgen
