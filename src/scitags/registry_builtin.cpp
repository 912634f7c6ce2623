// The embedded registry: a copy of the public Scitags registry, so that a site with no
// Internet access starts with the same names and ids as one that fetches it.
//
// Source: https://www.scitags.org/api.json as published from the scitags/scitags.github.io
// repository (file api.json, commit 3e51b59b53785c79092b118af17dd32fdd342522, the document
// stamped "modified": "2024-02-01T17:32:36.817459+00:00"). The content (names, ids, order,
// version, modified) is unchanged; only the whitespace differs, one activity per line.
// Note that juno, nova and xenon list only the "default" activity there (no perfSONAR).
// To refresh: replace the document below with the current api.json and run the unit tests.
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "flowmark/scitags/registry.hpp"

namespace flowmark::scitags {
namespace {

constexpr std::string_view kBuiltinRegistry = R"json({"experiments": [
  {"expName": "default", "expId": 1, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "DataChallenge", "activityId": 4}
  ]},
  {"expName": "atlas", "expId": 2, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Data Brokering", "activityId": 3},
    {"activityName": "Data Consolidation", "activityId": 4},
    {"activityName": "Data Rebalancing", "activityId": 8},
    {"activityName": "Debug", "activityId": 9},
    {"activityName": "Express", "activityId": 10},
    {"activityName": "Functional Test", "activityId": 11},
    {"activityName": "Functional Test XrootD", "activityId": 12},
    {"activityName": "Functional Test WebDAV", "activityId": 13},
    {"activityName": "Group Subscriptions", "activityId": 14},
    {"activityName": "Production Input", "activityId": 15},
    {"activityName": "Production Output", "activityId": 16},
    {"activityName": "Analysis Input", "activityId": 17},
    {"activityName": "Analysis Output", "activityId": 18},
    {"activityName": "Staging", "activityId": 19},
    {"activityName": "T0 Export", "activityId": 20},
    {"activityName": "T0 Tape", "activityId": 21},
    {"activityName": "Upload/Download (Job)", "activityId": 22},
    {"activityName": "Upload/Download (User)", "activityId": 23},
    {"activityName": "User Subscriptions", "activityId": 24},
    {"activityName": "Globus Online Test", "activityId": 25},
    {"activityName": "Data Challenge", "activityId": 26}
  ]},
  {"expName": "cms", "expId": 3, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "Data Challenge", "activityId": 4},
    {"activityName": "Data Brokering", "activityId": 5},
    {"activityName": "Data Consolidation", "activityId": 6},
    {"activityName": "Data rebalancing", "activityId": 7},
    {"activityName": "Debug", "activityId": 8},
    {"activityName": "Express", "activityId": 9},
    {"activityName": "Functional Test", "activityId": 10},
    {"activityName": "Group Subscriptions", "activityId": 11},
    {"activityName": "Production Input", "activityId": 12},
    {"activityName": "Production Output", "activityId": 13},
    {"activityName": "Analysis Input", "activityId": 14},
    {"activityName": "Analysis Output", "activityId": 15},
    {"activityName": "Staging", "activityId": 16},
    {"activityName": "T0 Export", "activityId": 17},
    {"activityName": "T0 Tape", "activityId": 18},
    {"activityName": "Upload/Download (Job)", "activityId": 19},
    {"activityName": "Upload/Download (User)", "activityId": 20},
    {"activityName": "User Subscriptions", "activityId": 21},
    {"activityName": "User AutoApprove", "activityId": 22}
  ]},
  {"expName": "lhcb", "expId": 4, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "DataChallenge", "activityId": 4}
  ]},
  {"expName": "alice", "expId": 5, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "DataChallenge", "activityId": 4},
    {"activityName": "Data Consolidation", "activityId": 8},
    {"activityName": "Job preparation", "activityId": 9},
    {"activityName": "Data access", "activityId": 10},
    {"activityName": "Calibration data access", "activityId": 11},
    {"activityName": "Job output", "activityId": 12},
    {"activityName": "Data replication", "activityId": 13},
    {"activityName": "CLI download", "activityId": 14},
    {"activityName": "CLI upload", "activityId": 15},
    {"activityName": "Functional tests", "activityId": 16}
  ]},
  {"expName": "belleii", "expId": 6, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "DataChallenge", "activityId": 4},
    {"activityName": "Data Consolidation", "activityId": 8},
    {"activityName": "Data Rebalancing", "activityId": 9},
    {"activityName": "Functional Test", "activityId": 10},
    {"activityName": "Functional Test WebDAV", "activityId": 11},
    {"activityName": "Recovery", "activityId": 12},
    {"activityName": "Production Input", "activityId": 13},
    {"activityName": "Production Output", "activityId": 14},
    {"activityName": "Production Merge", "activityId": 15},
    {"activityName": "Analysis Input", "activityId": 16},
    {"activityName": "Analysis Output", "activityId": 17},
    {"activityName": "Staging", "activityId": 18},
    {"activityName": "Raw Export", "activityId": 19},
    {"activityName": "Upload/Download (Job)", "activityId": 20},
    {"activityName": "Upload/Download (User)", "activityId": 21},
    {"activityName": "User Merge", "activityId": 22},
    {"activityName": "User Transfers", "activityId": 23},
    {"activityName": "User Subscription", "activityId": 24},
    {"activityName": "T0 Tape", "activityId": 25},
    {"activityName": "T0 Export", "activityId": 26}
  ]},
  {"expName": "ska", "expId": 7, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "DataChallenge", "activityId": 4}
  ]},
  {"expName": "dune", "expId": 8, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "DataChallenge", "activityId": 4}
  ]},
  {"expName": "lsst", "expId": 9, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "DataChallenge", "activityId": 4}
  ]},
  {"expName": "ilc", "expId": 10, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "DataChallenge", "activityId": 4}
  ]},
  {"expName": "auger", "expId": 11, "activities": [
    {"activityName": "default", "activityId": 1},
    {"activityName": "perfSONAR", "activityId": 2},
    {"activityName": "Cache", "activityId": 3},
    {"activityName": "DataChallenge", "activityId": 4}
  ]},
  {"expName": "juno", "expId": 12, "activities": [
    {"activityName": "default", "activityId": 1}
  ]},
  {"expName": "nova", "expId": 13, "activities": [
    {"activityName": "default", "activityId": 1}
  ]},
  {"expName": "xenon", "expId": 14, "activities": [
    {"activityName": "default", "activityId": 1}
  ]}
], "version": 1, "modified": "2024-02-01T17:32:36.817459+00:00"})json";

}  // namespace

const Registry& Registry::builtin() {
  // Parsed once, on first use; a function-local static is initialised thread-safely.
  static const Registry registry = [] {
    auto parsed = Registry::parse(kBuiltinRegistry, "builtin");
    if (!parsed) {  // a build defect, caught by the unit tests
      (void)std::fprintf(stderr, "flowmark: internal error: %s\n",
                         parsed.error().message().c_str());
      std::abort();
    }
    return std::move(*parsed);
  }();
  return registry;
}

}  // namespace flowmark::scitags
