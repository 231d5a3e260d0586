#!/usr/bin/env bash
# Build an uber jar from Java sources and the H2 jar, reproducibly: javac, then one jar with
# H2's classes and ours, entries in byte order, every timestamp fixed.
#   build-jar.sh SRC_DIR MAIN_CLASS OUT.jar
set -euo pipefail
src=$1 main=$2 out=$3
h2=${H2_JAR:-/usr/share/java/h2.jar}
[ -f "$h2" ] || { echo "build-jar: $h2 is missing (apt-get install libh2-java)" >&2; exit 1; }
stage=$(mktemp -d "${TMPDIR:-/tmp}/strata-jar.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/classes" "$stage/uber"
find "$src" -name '*.java' | LC_ALL=C sort > "$stage/sources"
javac -nowarn --release 17 -encoding UTF-8 -cp "$h2" -d "$stage/classes" @"$stage/sources"
(cd "$stage/uber" && jar --extract --file "$h2")
rm -rf "$stage/uber/META-INF/MANIFEST.MF" "$stage/uber/META-INF/"*.SF "$stage/uber/META-INF/"*.RSA "$stage/uber/META-INF/versions"
cp -R "$stage/classes/." "$stage/uber/"
(cd "$stage/uber" && find . -type f | LC_ALL=C sort | sed 's|^\./||') > "$stage/entries"
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
(cd "$stage/uber" && jar --create --date=1980-01-01T00:00:02Z --file "$out.tmp" --main-class "$main" @"$stage/entries")
mv "$out.tmp" "$out"
