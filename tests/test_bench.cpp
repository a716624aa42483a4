#define BOOST_TEST_MODULE bench
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "bench/bench.hpp"
#include "bench/svg.hpp"

using namespace parry::bench;

namespace {

std::size_t occurrences(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto i = s.find(what); i != std::string::npos; i = s.find(what, i + 1))
    ++n;
  return n;
}

} // namespace

BOOST_AUTO_TEST_CASE(each_series_is_a_histogram_with_its_percentiles) {
  std::vector<double> fast, slow;
  for (int i = 0; i < 100; ++i) {
    fast.push_back(1.0 + (i % 10) * 0.1);
    slow.push_back(40.0 + i);
  }
  auto svg =
      latency_svg("run <1> & \"2\"", {{"fast", fast}, {"empty", {}}, {"slow", slow}}, 20);
  BOOST_TEST(svg.rfind("<?xml", 0) == 0);
  BOOST_TEST(occurrences(svg, "<svg ") == 1u);
  BOOST_TEST(occurrences(svg, "</svg>") == 1u);
  // Two panels (the empty series is left out), 20 bars each.
  BOOST_TEST(occurrences(svg, "<rect class=\"bar\"") == 40u);
  BOOST_TEST(svg.find("empty") == std::string::npos);
  BOOST_TEST(svg.find("fast (100 samples; p50 1.40 ms, p99 1.90 ms)") !=
             std::string::npos);
  BOOST_TEST(occurrences(svg, ">p99</text>") == 2u);
  // The title is text, not markup.
  BOOST_TEST(svg.find("run &lt;1&gt; &amp; &quot;2&quot;") != std::string::npos);
  BOOST_TEST(svg.find("<1>") == std::string::npos);
  // Every sample is in some bar: the bar counts of a panel add up to its samples.
  std::size_t total = 0;
  for (auto i = svg.find(" ms: "); i != std::string::npos; i = svg.find(" ms: ", i + 1))
    total += std::stoul(svg.substr(i + 5));
  BOOST_TEST(total == 200u);
}

BOOST_AUTO_TEST_CASE(gateway_processes_only_past_parryds_own_cap) {
  using parry::bench::gateways_needed;
  // 20,000 files: parryd holds up to 17,952 connections itself.
  BOOST_TEST(gateways_needed(10'200, 20'000) == 0u);
  BOOST_TEST(gateways_needed(17'952, 20'000) == 0u);
  // Past it, each gateway is kept at 80 % of its cap (14,361 here).
  BOOST_TEST(gateways_needed(17'953, 20'000) == 2u);
  BOOST_TEST(gateways_needed(50'200, 20'000) == 4u);
  BOOST_TEST(gateways_needed(100'000, 20'000) == 7u);
  // A small limit: half of it for connections.
  BOOST_TEST(gateways_needed(512, 1'024) == 0u);
  BOOST_TEST(gateways_needed(1'000, 1'024) == 3u);
  BOOST_TEST(gateways_needed(10'000'000, 1'024) == 64u);
}
