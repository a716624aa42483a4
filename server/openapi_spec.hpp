#pragma once

#include <string_view>

namespace parry {

/// docs/openapi.yaml as it was when parryd was built (served at
/// /api/v1/openapi.yaml): the build embeds the file, so the description and the
/// server that answers always come from the same commit.
std::string_view openapi_spec();

} // namespace parry
