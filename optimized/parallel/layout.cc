/* Layout validation: what each parallel degree must divide. */
#include "optimized/parallel/layout.h"

#include "reference/common/error.h"

namespace pb {

const std::vector<std::string>& Layout::keys() {
  static const std::vector<std::string> k = {"dp", "tp", "pp", "vpp", "cp", "ep"};
  return k;
}

int* Layout::degree(const std::string& key) {
  int* const fields[] = {&dp, &tp, &pp, &vpp, &cp, &ep};
  for (size_t i = 0; i < keys().size(); ++i)
    if (keys()[i] == key) return fields[i];
  return nullptr;
}

std::string Layout::str() const {
  std::string s;
  auto add = [&](const char* n, int v) {
    if (v > 1) s += (s.empty() ? "" : " ") + std::string(n) + std::to_string(v);
  };
  add("dp", dp);
  add("tp", tp);
  add("pp", pp);
  add("vpp", vpp);
  add("cp", cp);
  add("ep", ep);
  return s.empty() ? "1 rank" : s;
}

void validate_layout(const Layout& l, const ref::ModelConfig& mc, bool split_given) {
  for (auto [name, v] : {std::pair{"dp", l.dp}, {"tp", l.tp}, {"pp", l.pp}, {"vpp", l.vpp}, {"cp", l.cp}, {"ep", l.ep}})
    PB_REQUIRE(v >= 1, "invalid layout: ", name, " must be >= 1, got ", v);
  PB_REQUIRE(l.vpp == 1 || l.pp > 1, "invalid layout: vpp ", l.vpp, " needs pp > 1");
  PB_REQUIRE(split_given || mc.num_hidden_layers % (l.pp * l.vpp) == 0, "invalid layout: pp ", l.pp, " x vpp ", l.vpp,
             " does not divide num_hidden_layers ", mc.num_hidden_layers, " (or give pp_layers)");
}

}  // namespace pb
