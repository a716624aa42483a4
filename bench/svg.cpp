#include "bench/svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "bench/measure.hpp"

namespace parry::bench {

namespace {

constexpr int width = 760;
constexpr int panel = 170; ///< height of one histogram with its labels
constexpr int left = 60, right = 20, top = 40;
constexpr int plot_w = width - left - right;
constexpr int plot_h = 110;

/// Text for an SVG element: the five characters XML reserves are escaped.
std::string escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '&':
      out += "&amp;";
      break;
    case '"':
      out += "&quot;";
      break;
    case '\'':
      out += "&apos;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

std::string num(double x, int decimals = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
  return buf;
}

void histogram(std::string& svg, int y0, const latency_series& s, int bins) {
  const auto& v = s.second;
  double hi = std::max(percentile(v, 99.9), 1e-3);
  std::vector<std::size_t> count(static_cast<std::size_t>(bins), 0);
  for (double x : v) {
    auto b = static_cast<long>(std::floor(x / hi * bins));
    count[static_cast<std::size_t>(std::clamp<long>(b, 0, bins - 1))]++;
  }
  std::size_t most =
      std::max<std::size_t>(*std::max_element(count.begin(), count.end()), 1);
  double p50 = percentile(v, 50), p99 = percentile(v, 99);
  svg += "<text x=\"" + std::to_string(left) + "\" y=\"" + std::to_string(y0 - 8) +
         "\" class=\"name\">" + escaped(s.first) + " (" + std::to_string(v.size()) +
         " samples; p50 " + num(p50) + " ms, p99 " + num(p99) + " ms)</text>\n";
  double bw = double(plot_w) / bins;
  for (int b = 0; b < bins; ++b) {
    double h = double(count[static_cast<std::size_t>(b)]) / double(most) * plot_h;
    svg += "<rect class=\"bar\" x=\"" + num(left + b * bw, 1) + "\" y=\"" +
           num(y0 + plot_h - h, 1) + "\" width=\"" + num(bw - 1, 1) + "\" height=\"" +
           num(h, 1) + "\"><title>" + num(hi * b / bins) + "–" +
           num(hi * (b + 1) / bins) +
           " ms: " + std::to_string(count[static_cast<std::size_t>(b)]) +
           "</title></rect>\n";
  }
  auto mark = [&](double x, const char* label) {
    double px = left + std::min(x / hi, 1.0) * plot_w;
    svg += "<line class=\"mark\" x1=\"" + num(px, 1) + "\" x2=\"" + num(px, 1) +
           "\" y1=\"" + std::to_string(y0) + "\" y2=\"" + std::to_string(y0 + plot_h) +
           "\"/><text class=\"mark\" x=\"" + num(px + 3, 1) + "\" y=\"" +
           std::to_string(y0 + 10) + "\">" + label + "</text>\n";
  };
  mark(p50, "p50");
  mark(p99, "p99");
  int ya = y0 + plot_h;
  svg += "<line class=\"axis\" x1=\"" + std::to_string(left) + "\" x2=\"" +
         std::to_string(left + plot_w) + "\" y1=\"" + std::to_string(ya) + "\" y2=\"" +
         std::to_string(ya) + "\"/>\n";
  for (int t = 0; t <= 4; ++t) {
    double x = hi * t / 4;
    std::string label = (t == 4 ? "≥ " : "") + num(x) + " ms";
    svg += "<text class=\"tick\" x=\"" + num(left + plot_w * t / 4.0, 1) + "\" y=\"" +
           std::to_string(ya + 14) + "\">" + label + "</text>\n";
  }
  svg += "<text class=\"tick\" x=\"" + std::to_string(left - 6) + "\" y=\"" +
         std::to_string(y0 + 8) + "\" text-anchor=\"end\">" + std::to_string(most) +
         "</text>\n";
}

} // namespace

std::string latency_svg(const std::string& title,
                        const std::vector<latency_series>& series, int bins) {
  bins = std::clamp(bins, 1, 1000);
  int shown = 0;
  for (const auto& s : series)
    shown += s.second.empty() ? 0 : 1;
  int height = top + shown * panel + 10;
  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                    std::to_string(width) + "\" height=\"" + std::to_string(height) +
                    "\" viewBox=\"0 0 " + std::to_string(width) + " " +
                    std::to_string(height) + "\">\n";
  svg += "<style>text{font:12px sans-serif;fill:#222}.name{font-weight:bold}"
         ".tick{font-size:10px;text-anchor:middle}.bar{fill:#4a7ab5}"
         ".mark{stroke:#c0392b;fill:#c0392b;font-size:10px;text-anchor:start}"
         ".axis{stroke:#444}</style>\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  svg += "<text x=\"" + std::to_string(left) + "\" y=\"20\" class=\"name\">" +
         escaped(title) + "</text>\n";
  int y = top + 20;
  for (const auto& s : series) {
    if (s.second.empty()) continue;
    histogram(svg, y, s, bins);
    y += panel;
  }
  svg += "</svg>\n";
  return svg;
}

} // namespace parry::bench
