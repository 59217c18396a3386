/* The technique registry: one entry per technique, the only place that knows technique
 * names (DESIGN.md, "Features are typed").
 *
 * An entry says what the technique is called and does, which cases it is active in (a
 * feature named in the case, a layout degree above 1, or a pipeline schedule), what it
 * needs of the layout and the model (one-line errors), which strategy it installs behind
 * one of the model's seams (optimized/model/strategies.h), and its analytic terms
 * (communication per group / op / phase / call size, memory per category), which live
 * beside the technique's code. The case parser, `parabench list`, `analyze`, `run`, the
 * analytic model and the training step read this list; none of them compares names.
 *
 * Adding a technique: its strategy file, its terms beside it, one entry in registry.cc.
 */
#pragma once

#include <string>
#include <vector>

#include "optimized/model/features.h"
#include "optimized/parallel/layout.h"
#include "optimized/parallel/terms.h"
#include "optimized/train/pp_schedule.h"
#include "reference/model/config.h"

namespace pb {

struct Strategies;

// What a technique's checks and terms see of a case.
struct CaseSpec {
  const ref::ModelConfig& model;
  const ref::TrainConfig& train;
  const Layout& layout;
  const Features& features;
  const std::string& schedule;  // pipeline schedule kind (used when pp > 1)
};

enum class TechniqueKind { Degree, Feature, Schedule };

struct Technique {
  const char* name;
  TechniqueKind kind;
  const char* summary;
  bool implemented;   // false: known, refused with "not available in this build yet"
  bool single_rank;   // meaningful without parallel degrees (kept by a one-rank baseline)
  bool (*active)(const CaseSpec&);                           // in this case? (schedules: is_active)
  void (*enable)(Features&);                                 // Feature: sets its typed field
  void (*require)(const CaseSpec&);                          // throws pb::Error, one line
  void (*install)(const CaseSpec&, Strategies&);             // the strategy behind a seam
  void (*terms)(const CaseSpec&, const Dims&, Terms&);       // its analytic terms
};

const std::vector<Technique>& techniques();
bool is_active(const Technique& t, const CaseSpec& c);
// The names of one kind joined by sep ("gpipe | 1f1b | ..."), for help texts and errors.
std::string technique_names(TechniqueKind kind, const char* sep = " | ");
// The entry of a name (a feature, degree or schedule); throws with one line for unknown names.
const Technique* find_technique(const std::string& name);
// Feature names of a case to typed features; unknown names throw (one line), and so do
// names this build does not run unless only_known (the case parser: such a case is
// refused when it runs, with its own error line, and the rest of the suite still runs).
Features parse_features(const std::vector<std::string>& names, bool only_known = false);
// Every check of a case: the layout's own, then each active technique's.
void validate_case_spec(const CaseSpec& c);
// The strategies of a case's model: the defaults, then what each active technique installs.
Strategies strategies_for(const CaseSpec& c);
// The case's pipeline schedule (pp > 1): its kind over pp x vpp and its micro-batches, with
// recompute in advance's R actions where that feature is on (the interleaved kind).
pp::Schedule schedule_for(const CaseSpec& c);
// Where a case's stages live and which layers each holds (its split: train/pp_partition.h).
pp::Placement placement_for(const CaseSpec& c);
// Every active technique's analytic terms for the ranks of one pipeline rank (d.pp_rank).
Terms technique_terms(const CaseSpec& c, const Dims& d);

}  // namespace pb
