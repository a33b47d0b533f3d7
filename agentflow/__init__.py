"""agentflow: run LLM-written plans durably.

    import agentflow as af

    async with af.Engine.open("sqlite:///agentflow.db") as engine:
        binding = engine.register("pipeline", Pipeline)
        instance = await binding.create(params={...})
"""

from .approvals import (
    ApprovalDecidedError,
    ApprovalNotFoundError,
    ApprovalRequest,
    Decision,
    StaleApprovalError,
)
from .clock import Clock, FakeClock, SystemClock
from .engine import Engine
from .errors import (
    AgentflowError,
    DuplicateInstanceError,
    EngineClosedError,
    InstanceNotFoundError,
    InvalidArgumentError,
    InvalidDurationError,
    InvalidEventTypeError,
    InvalidIdError,
    InvalidStateError,
    InvalidStepNameError,
    NonRetryableError,
    NotFoundError,
    PayloadError,
    StepError,
    StepLimitExceededError,
    StorageError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from .instance import Instance, WorkflowBinding
from .records import (
    ErrorInfo,
    Event,
    InstanceDetails,
    InstanceEvent,
    Retries,
    StepConfig,
    StepContext,
    StepEvent,
    StepInfo,
)
from .status import InstanceStatus
from .step import Step
from .workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "AgentflowError",
    "ApprovalDecidedError",
    "ApprovalNotFoundError",
    "ApprovalRequest",
    "Clock",
    "Decision",
    "DuplicateInstanceError",
    "Engine",
    "EngineClosedError",
    "ErrorInfo",
    "Event",
    "FakeClock",
    "Instance",
    "InstanceDetails",
    "InstanceEvent",
    "InstanceNotFoundError",
    "InstanceStatus",
    "InvalidArgumentError",
    "InvalidDurationError",
    "InvalidEventTypeError",
    "InvalidIdError",
    "InvalidStateError",
    "InvalidStepNameError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadError",
    "Retries",
    "Step",
    "StepConfig",
    "StepContext",
    "StepError",
    "StepEvent",
    "StepInfo",
    "StaleApprovalError",
    "StepLimitExceededError",
    "StorageError",
    "SystemClock",
    "Workflow",
    "WorkflowBinding",
    "WorkflowNotFoundError",
    "WorkflowTimeoutError",
    "__version__",
]
