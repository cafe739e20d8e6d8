"""Pipeline stages: each is a generator ``Iterator[Chunk] -> Iterator[Chunk]`` plus the API call that runs it."""
