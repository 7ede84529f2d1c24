DROP INDEX visits_by_release;
