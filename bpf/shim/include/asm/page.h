/* BCC includes this file; nothing in it is needed by our programs. */
