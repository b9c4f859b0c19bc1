// Conversations the chat-template goldens render.
export const conversations = [
  { name: 'single_user', messages: [{ role: 'user', content: 'Hello! How are you?' }] },
  {
    name: 'system_user',
    messages: [
      { role: 'system', content: 'You are a concise assistant.' },
      { role: 'user', content: 'What is tensor parallelism?' },
    ],
  },
  {
    name: 'multi_turn',
    messages: [
      { role: 'system', content: 'You are helpful.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello! How can I help?' },
      { role: 'user', content: '  Tell me a joke.  \n' },
      { role: 'assistant', content: 'Why did the GPU cross the road? To reduce latency.' },
      { role: 'user', content: 'Another one, in 中文 please 🙂' },
    ],
  },
  {
    name: 'assistant_last',
    messages: [
      { role: 'user', content: 'Count to three.' },
      { role: 'assistant', content: 'One, two, three.' },
    ],
  },
  {
    name: 'thinking',
    messages: [
      { role: 'user', content: 'What is 2+2?' },
      { role: 'assistant', content: '<think>\nSimple arithmetic.\n</think>\n\n2+2 = 4.' },
      { role: 'user', content: 'And 3+3?' },
    ],
  },
];
