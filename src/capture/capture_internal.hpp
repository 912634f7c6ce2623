// Shared between the capture back ends.
#pragma once

#include <memory>

#include "flowmark/capture/capture.hpp"
#include "flowmark/capture/pcap_source.hpp"

namespace flowmark::capture::detail {

// libpcap behind the Capture interface (one frame per batch: libpcap reuses its buffer).
std::unique_ptr<Capture> wrap_pcap(PcapSource src);

}  // namespace flowmark::capture::detail
