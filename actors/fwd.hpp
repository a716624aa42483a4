#pragma once

// Everything an actor file usually needs: the atoms, the records and the actor
// catalogue. Include the narrower header where one suffices.

#include "actors/actors.hpp"
#include "actors/atoms.hpp"
#include "actors/records.hpp"
