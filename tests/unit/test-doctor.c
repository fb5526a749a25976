/* tests/unit/test-doctor.c: unit tests for src/doctor/. */
#include "test.h"
