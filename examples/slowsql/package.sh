#!/usr/bin/env bash
# Builds dist/slowsql-<version>.tar.gz: the code tarball telejob fetches and unpacks.
set -euo pipefail
cd "$(dirname "$0")"
version=0.3
mkdir -p dist
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -p run.sh "$stage/"
cp -rp data "$stage/"
if command -v telejob >/dev/null 2>&1; then
  telejob package "$stage" -o "dist/slowsql-${version}.tar.gz" >/dev/null
else
  tar -C "$stage" -czf "dist/slowsql-${version}.tar.gz" .
fi
echo "dist/slowsql-${version}.tar.gz"
