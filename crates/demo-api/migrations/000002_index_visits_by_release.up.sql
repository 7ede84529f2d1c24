CREATE INDEX visits_by_release ON visits (release);
