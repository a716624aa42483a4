// The one translation unit that holds CAF's test engine, without its main():
// Boost.Test runs the tests.
#define CAF_TEST_NO_MAIN
#include <caf/test/unit_test_impl.hpp>
