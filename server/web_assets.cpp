#include "server/web_assets.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "common/crypto.hpp"

namespace parry {

namespace {

constexpr std::size_t max_files = 256;
constexpr std::size_t max_file_bytes = 4u << 20;
constexpr std::size_t max_total_bytes = 32u << 20;

const char* content_type_of(const std::string& ext) {
  static const std::map<std::string, const char*> types{
      {".html", "text/html; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"}};
  auto i = types.find(ext);
  return i == types.end() ? nullptr : i->second;
}

bool plain_name(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  for (char c : name)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

} // namespace

web_assets web_assets::load(const std::string& dir) {
  namespace fs = std::filesystem;
  web_assets out;
  std::size_t total = 0;
  std::error_code ec;
  fs::directory_iterator it{dir, ec};
  if (ec) throw std::runtime_error("web_dir " + dir + ": " + ec.message());
  for (const auto& entry : it) {
    auto name = entry.path().filename().string();
    auto type = content_type_of(entry.path().extension().string());
    if (!type || !plain_name(name) || !entry.is_regular_file()) continue;
    if (out.files_.size() == max_files)
      throw std::runtime_error("web_dir " + dir + ": more than 256 files");
    auto size = entry.file_size();
    if (size > max_file_bytes || total + size > max_total_bytes)
      throw std::runtime_error("web_dir " + dir + ": " + name +
                               " makes the console larger than allowed (4 MiB a file, "
                               "32 MiB in all)");
    std::ifstream in{entry.path(), std::ios::binary};
    std::string body{std::istreambuf_iterator<char>{in}, {}};
    if (!in.good() && !in.eof())
      throw std::runtime_error("web_dir " + dir + ": cannot read " + name);
    total += body.size();
    auto etag = "\"" + sha256_hex(body).substr(0, 32) + "\"";
    out.files_.emplace(name, web_asset{std::move(body), type, std::move(etag)});
  }
  if (!out.files_.count("index.html"))
    throw std::runtime_error("web_dir " + dir + " has no index.html");
  return out;
}

const web_asset* web_assets::find(std::string_view path) const {
  if (path == "/") path = "/index.html";
  if (path.empty() || path[0] != '/') return nullptr;
  auto i = files_.find(path.substr(1));
  return i == files_.end() ? nullptr : &i->second;
}

} // namespace parry
