-- 0002_dead_letters_origin_unique.sql: one dead letter per origin record (topic, partition,
-- offset), enforced by a unique index that tp-worker's INSERT ... ON CONFLICT DO NOTHING uses as
-- its arbiter (the NOT EXISTS it replaces was racy and scanned the table each time).
-- Duplicates the race may have let in are folded first: the oldest row of each origin stays and
-- keeps a replay mark that any copy carried. Rows without an origin (NULLs) are never equal.

UPDATE dead_letters k
   SET replayed_at = d.replayed_at
  FROM (SELECT min(id) AS keep_id, max(replayed_at) AS replayed_at
          FROM dead_letters
         WHERE origin_topic IS NOT NULL AND origin_partition IS NOT NULL AND origin_offset IS NOT NULL
         GROUP BY origin_topic, origin_partition, origin_offset
        HAVING count(*) > 1) d
 WHERE k.id = d.keep_id AND k.replayed_at IS NULL AND d.replayed_at IS NOT NULL;

DELETE FROM dead_letters dup
 USING dead_letters keep
 WHERE dup.origin_topic = keep.origin_topic
   AND dup.origin_partition = keep.origin_partition
   AND dup.origin_offset = keep.origin_offset
   AND dup.id > keep.id;

CREATE UNIQUE INDEX dead_letters_origin_key
    ON dead_letters (origin_topic, origin_partition, origin_offset);
