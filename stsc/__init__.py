"""stsc: AI Scientist via Synthetic Task Scaling, as a declarative framework.

Importing the package does nothing and costs little; every heavy library is imported inside the
function that needs it.
"""

__version__ = "0.1.0"
