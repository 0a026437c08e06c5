-- A run walks each table in chunks of its pages (a TID range scan reads each page once), no
-- longer in ranges of ids: the cursor of the last committed id range means nothing any more.
alter table usersync.runs drop column cursor;
