/* tests/unit/test-vm.c: unit tests for src/vm/. */
#include "test.h"
