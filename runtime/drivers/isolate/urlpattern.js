// Grove prelude part: urlpattern. Runs inside every isolate as part of the one prelude script (see
// PRELUDE_PARTS in isolate-driver.ts for the order). Placeholder until the part is written.
