"""The test suite, a package: helpers are imported as `tests.support...`, never through pytest's rootdir."""
