// flowmark::observe — flow records as text: JSON lines (the seed's field names, so what
// consumed pathspider's records reads ours unchanged) or CSV with a header line.
//
//   std::string out;
//   append_record_json(out, record, &observer);   // {"sip":"10.0.0.1",...}\n
// With an observer, its chains' fields follow the record's own (null where the record is not
// one the observer holds: call these from the sink).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "flowmark/observe/observer.hpp"

namespace flowmark::observe {

// An address as the records write it (the same text as inet_ntop()).
std::string format_address(const IpAddress& a);
// The same text written at `out` (room for kAddressTextMax bytes); returns its end.
inline constexpr std::size_t kAddressTextMax = 46;
char* format_address(char* out, const IpAddress& a) noexcept;

// The chains' fields of a record the observer holds (nulls for any other), as values.
void visit_chain_fields(const FlowRecord& r, const Observer& obs, FieldVisitor& visitor);

void append_record_json(std::string& out, const FlowRecord& r, const Observer* obs = nullptr);
void append_csv_header(std::string& out, const Observer* obs = nullptr);
void append_record_csv(std::string& out, const FlowRecord& r, const Observer* obs = nullptr);

}  // namespace flowmark::observe
