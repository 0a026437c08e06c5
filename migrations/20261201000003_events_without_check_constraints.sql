-- The audit log's check constraints go: usersync is its one writer, and its vocabulary (paths,
-- kinds, actions; a row either for one user or for a run's chunk) is typed in usersync's code.
--
-- Postgres prepares a table's check constraints anew for every statement that writes it. A
-- sign-up's trigger writes one audit row in a statement of its own, and the two checks were
-- about a tenth of everything the trigger did (8 of some 90 microseconds, README,
-- "Benchmarks").
alter table usersync.events drop constraint events_path_check;
alter table usersync.events drop constraint events_one_user_or_a_chunk;
