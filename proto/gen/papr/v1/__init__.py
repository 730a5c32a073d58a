"""Generated gRPC code for package papr.v1 (see proto/generate.py); do not edit."""
