"""`frugal serve`: an OpenAI-compatible server in three parts, as vLLM lays it out: pydantic
protocol models (`protocol`), serving classes without web imports (`engine`, `openai_serving`,
`metrics`), and thin FastAPI routes (`app`)."""
