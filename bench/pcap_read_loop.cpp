// pcap_read_loop FILE — the floor for whole-process capture readers: a bare libpcap
// pcap_next_ex() loop over FILE that reads one byte of each frame's IP header and nothing
// else. bench/observe_bench.sh times it next to `flowmark observe -r` (which reads frames
// through libpcap the same way) and the peer flow meters.
#include <pcap/pcap.h>

#include <cstdint>
#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: pcap_read_loop FILE\n");
    return 2;
  }
  char err[PCAP_ERRBUF_SIZE] = {};
  pcap_t* p = pcap_open_offline(argv[1], err);
  if (p == nullptr) {
    std::fprintf(stderr, "pcap_read_loop: %s\n", err);
    return 66;
  }
  pcap_pkthdr* h = nullptr;
  const u_char* d = nullptr;
  std::uint64_t n = 0, bytes = 0, sum = 0;
  int rc;
  while ((rc = pcap_next_ex(p, &h, &d)) == 1) {
    ++n;
    bytes += h->caplen;
    if (h->caplen > 14) sum += d[14];
  }
  if (rc != PCAP_ERROR_BREAK) {
    std::fprintf(stderr, "pcap_read_loop: %s\n", pcap_geterr(p));
    pcap_close(p);
    return 65;
  }
  pcap_close(p);
  std::printf("%llu frames, %llu bytes (checksum %llu)\n", static_cast<unsigned long long>(n),
              static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(sum));
  return 0;
}
