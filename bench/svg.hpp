#pragma once

// Latency distributions as an SVG picture: one histogram per series, stacked, with
// the p50 and p99 marked. People read a distribution faster than a table of
// percentiles, and a second mode or a long tail shows at once.

#include <string>
#include <utility>
#include <vector>

namespace parry::bench {

/// A named series of samples in milliseconds.
using latency_series = std::pair<std::string, std::vector<double>>;

/// An SVG document (UTF-8 text) with one histogram per non-empty series: `bins`
/// equal bins from 0 to the series' p99.9 (everything above falls in the last
/// bin, labelled "≥"), the count of each bin, and lines at p50 and p99.
std::string latency_svg(const std::string& title,
                        const std::vector<latency_series>& series, int bins = 40);

} // namespace parry::bench
