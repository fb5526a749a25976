/* tests/unit/test-image.c: unit tests for src/image/. */
#include "test.h"
