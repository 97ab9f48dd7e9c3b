"""Scheduled and composable conditioning, without the prompt-editing grammar."""

from collections import namedtuple

import torch

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules = schedules
        self.weight = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape = shape
        self.batch = batch


def get_learned_conditioning(model, prompts, steps):
    return [[ScheduledPromptConditioning(steps, model.get_learned_conditioning([p])[0])] for p in prompts]


def get_multicond_learned_conditioning(model, prompts, steps):
    batch = []
    for prompt in prompts:
        parts = [s.strip() for s in prompt.split(" AND ")]
        batch.append([ComposableScheduledPromptConditioning(get_learned_conditioning(model, [s], steps)[0]) for s in parts])
    return MulticondLearnedConditioning((len(prompts),), batch)


def _stack(tensors):
    # as the host: shorter conds are padded by repeating their last vector
    count = max(t.shape[0] for t in tensors)
    return torch.stack([t if t.shape[0] == count else torch.cat([t, t[-1:].repeat(count - t.shape[0], 1)])
                        for t in tensors])


def _at(schedules, step):
    # second-order samplers count more model calls than steps: the last schedule holds
    return next((s.cond for s in schedules if step <= s.end_at_step), schedules[-1].cond)


def reconstruct_cond_batch(c, current_step):
    return _stack([_at(schedules, current_step) for schedules in c])


def reconstruct_multicond_batch(c, current_step):
    tensors, conds_list = [], []
    for composable_prompts in c.batch:
        conds = []
        for composable in composable_prompts:
            conds.append((len(tensors), composable.weight))
            tensors.append(_at(composable.schedules, current_step))
        conds_list.append(conds)
    return conds_list, _stack(tensors)
