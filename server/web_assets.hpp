#pragma once

// The web console's files (web/), read once at start and served from memory by the
// HTTPS front end: only the files found then, so no request path ever reaches the
// file system.

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

namespace parry {

struct web_asset {
  std::string body;
  std::string content_type;
  /// Strong validator: a hash of the body, quoted.
  std::string etag;
};

class web_assets {
public:
  /// Reads the regular files directly in `dir` whose names are [A-Za-z0-9._-] and end
  /// in .html, .css, .js, .svg, .png or .ico; others are skipped. At most 256 files,
  /// 4 MiB each, 32 MiB in all; it must hold index.html. Throws std::runtime_error
  /// naming the problem.
  static web_assets load(const std::string& dir);

  /// The file for request path `path` ("/" is index.html), or null.
  const web_asset* find(std::string_view path) const;
  std::size_t size() const { return files_.size(); }

private:
  std::map<std::string, web_asset, std::less<>> files_;
};

} // namespace parry
