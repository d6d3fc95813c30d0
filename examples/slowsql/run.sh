#!/usr/bin/env bash
# slowsql: aggregate one day of slow-query samples into output/slowsqlYYYYMMDD.csv.gz.
#
# telejob runs this from the root of the unpacked tarball. The day processed is the one before the
# run's slot (TELEJOB_SCHEDULED_FOR), because a day's data is complete only the next day.
set -euo pipefail

slot="${TELEJOB_SCHEDULED_FOR:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}"
day=$(date -u -d "${slot%%T*} -1 day" +%Y-%m-%d)
stamp=${day//-/}
out=output/slowsql${stamp}.csv.gz

mkdir -p output
echo "slowsql: aggregating slow queries of ${day} (slot ${slot})"

# The bundled sample covers 2014-03-01 to 2014-03-10. With SLOWSQL_MAP_TO_SAMPLE=1 (as the
# example job of `telejob serve --example` has) a day outside it reads one of those ten days
# instead, so that every day's file has content; the file keeps its own date.
source_day=$day
if [ "${SLOWSQL_MAP_TO_SAMPLE:-}" = 1 ] && ! grep -q "^${day}," data/queries.csv; then
  source_day=$(printf '2014-03-%02d' $(( $(date -u -d "$day" +%s) / 86400 % 10 + 1 )))
  echo "slowsql: no sample data for ${day}; reading the sample's ${source_day} (SLOWSQL_MAP_TO_SAMPLE=1)"
fi

# data/queries.csv: day,database,duration_ms,fingerprint
# Aggregates only: per database, the number of slow queries, mean and max duration. Raw rows
# (which could hold anything) are never published.
awk -F, -v day="$day" -v source_day="$source_day" '
  NR == 1 { next }
  $1 == source_day { n[$2]++; sum[$2] += $3; if ($3 > max[$2]) max[$2] = $3 }
  END {
    print "day,database,slow_queries,mean_ms,max_ms"
    for (db in n) printf "%s,%s,%d,%.1f,%d\n", day, db, n[db], sum[db] / n[db], max[db]
  }' data/queries.csv | { read -r header; echo "$header"; sort; } | gzip -9n > "$out"

rows=$(gzip -dc "$out" | tail -n +2 | wc -l)
if [ "$rows" -eq 0 ]; then
  echo "slowsql: no slow queries recorded for ${day} (the bundled sample covers 2014-03-01 to 2014-03-10)"
fi
echo "slowsql: wrote ${out} (${rows} databases)"
