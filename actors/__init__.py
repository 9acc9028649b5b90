"""The Ray layer and the command line: workers, remote adapters, coordinator, env runners, Serve, jobs."""
