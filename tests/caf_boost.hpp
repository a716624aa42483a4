#pragma once

// Runs CAF's deterministic test DSL (test coordinator, expect, run, advance_time)
// under Boost.Test: CAF's check macros are mapped onto Boost's.

#include <boost/test/unit_test.hpp>

#include <caf/test/unit_test.hpp>

#undef CAF_CHECK
#undef CAF_CHECK_EQUAL
#undef CAF_REQUIRE
#undef CAF_REQUIRE_EQUAL
#undef CAF_FAIL
#undef CAF_MESSAGE
#define CAF_CHECK(...) BOOST_CHECK(__VA_ARGS__)
#define CAF_CHECK_EQUAL(x, y) BOOST_CHECK((x) == (y))
#define CAF_REQUIRE(...) BOOST_REQUIRE(__VA_ARGS__)
#define CAF_REQUIRE_EQUAL(x, y) BOOST_REQUIRE((x) == (y))
#define CAF_FAIL(msg) BOOST_FAIL(msg)
#define CAF_MESSAGE(msg) BOOST_TEST_MESSAGE(msg)
#ifndef FAIL
#define FAIL(msg) BOOST_FAIL(msg)
#endif

#include <caf/test/dsl.hpp>
