#pragma once

// PARRY_MSGPACK_MAP: msgpack-cxx's MSGPACK_DEFINE_MAP with a decode that reads the
// map once. msgpack-cxx builds a std::map<std::string, object const*> of every key
// of every map before it looks up each field: one allocation per key and per node,
// the gateway's largest cost in an ingest profile (docs/benchmarks.md). This walks
// the keys once and compares them with the field names in place.
//
// Same meaning as msgpack-cxx's: a key that is not a string fails the decode
// (msgpack::type_error), unknown keys are ignored, missing ones leave the field as
// it was, a repeated key counts the first time only (std::map::emplace keeps the
// first), fields are converted in declaration order. Encoding is msgpack-cxx's.

#include <cstddef>
#include <string_view>
#include <tuple>
#include <utility>

#include <msgpack.hpp>

namespace parry::bus::detail {

/// Set by a decode on this thread that met a key it does not know or a key twice;
/// bus::decode clears it first and reports it (`exact`).
inline thread_local bool met_extra_keys = false;

template <std::size_t N> constexpr std::string_view field_name(const char (&s)[N]) {
  return std::string_view{s, N - 1};
}

/// The fields of a struct as msgpack-cxx's define_map lists them: name, member, ...
template <class... Args> class map_fields {
public:
  explicit map_fields(Args&... args) : a_(args...) {}

  void unpack(const msgpack::object& o) const {
    if (o.type != msgpack::type::MAP) throw msgpack::type_error();
    const msgpack::object* found[count] = {};
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const auto& kv = o.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) throw msgpack::type_error();
      match(std::string_view{kv.key.via.str.ptr, kv.key.via.str.size}, kv.val, found,
            std::make_index_sequence<count>{});
    }
    convert(found, std::make_index_sequence<count>{});
  }

private:
  static constexpr std::size_t count = sizeof...(Args) / 2;
  static_assert(sizeof...(Args) % 2 == 0, "name, member pairs");

  template <std::size_t... I>
  void match(std::string_view key, const msgpack::object& value,
             const msgpack::object** found, std::index_sequence<I...>) const {
    bool known = ((key == field_name(std::get<2 * I>(a_))
                       ? (found[I] == nullptr ? (found[I] = &value, true) : false)
                       : false) ||
                  ...);
    if (!known) met_extra_keys = true; // unknown, or a repeat (the first counts)
  }

  template <std::size_t... I>
  void convert(const msgpack::object** found, std::index_sequence<I...>) const {
    ((found[I] != nullptr ? (void)found[I]->convert(std::get<2 * I + 1>(a_)) : (void)0),
     ...);
  }

  std::tuple<Args&...> a_;
};

template <class... Args> map_fields<Args...> make_map_fields(Args&... args) {
  return map_fields<Args...>(args...);
}

} // namespace parry::bus::detail

#define PARRY_MSGPACK_MAP(...)                                                           \
  template <typename Packer> void msgpack_pack(Packer& msgpack_pk) const {               \
    msgpack::type::make_define_map MSGPACK_DEFINE_MAP_IMPL(__VA_ARGS__)                  \
        .msgpack_pack(msgpack_pk);                                                       \
  }                                                                                      \
  void msgpack_unpack(msgpack::object const& msgpack_o) {                                \
    ::parry::bus::detail::make_map_fields MSGPACK_DEFINE_MAP_IMPL(__VA_ARGS__)           \
        .unpack(msgpack_o);                                                              \
  }                                                                                      \
  template <typename MSGPACK_OBJECT>                                                     \
  void msgpack_object(MSGPACK_OBJECT* msgpack_o, msgpack::zone& msgpack_z) const {       \
    msgpack::type::make_define_map MSGPACK_DEFINE_MAP_IMPL(__VA_ARGS__)                  \
        .msgpack_object(msgpack_o, msgpack_z);                                           \
  }
