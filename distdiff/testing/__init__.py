"""Scaffolding for the tests and benchmarks: a local SeaweedFS S3 server and toy stage-2 exports.
Nothing in the library imports it."""
